"""Training pipeline: data -> tokenizer -> model -> train -> export -> evaluate.

`python -m training --help` lists the steps. torch is imported only by the steps that need it.
"""
