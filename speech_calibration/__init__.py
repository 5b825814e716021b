"""How well calibrated is an audio LLM fine-tuned to detect speech? The library behind the DVC pipeline.

By concern (a reader finds anything from the file names alone):

    data/         the data contract (schema), audio I/O, the grouped split, the embedded synthetic corpus,
                  the condition variants
    model/        loading Qwen2-Audio and LoRA, input building, the forward pass, scoring, training, the tiny model
    calibration/  one calibrator class per method in one registry, fitting, dev calibration of a system
    stats/        metrics, resampling and intervals, psychometric fits, paired tests
    vad/          the reference voice-activity detectors and their scoring
    report/       evaluation on test, the multi-seed summary, the conditions report, reliability plots
    layout.py     every path;  params.py  the typed params.yaml loader;  errors.py, cli.py, fileio.py

Package ``__init__`` files hold only a docstring (``tests/test_layering.py``), so importing a module
runs that module's code and nothing else.
"""
