"""The data: the contract of every file (schema), audio I/O, the grouped split, the synthetic corpus, condition variants."""
