"""Speed measurements of marginrobust, as ratios against plain PyTorch and direct library calls."""
