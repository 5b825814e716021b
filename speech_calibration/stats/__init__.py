"""Statistics: metrics of a binary classifier, resampling and intervals, psychometric fits, paired tests."""
