"""Reports: evaluation on test, the reference systems, the multi-seed summary, the conditions report, reliability plots."""
