"""Hypothesis strategies for random audio input, shared by the property tests of the feature extractor and the model.

The shortest length, 3585 samples at 16 kHz, is the fewest samples that give one patch of frames (see
`feature_extraction_maest`); amplitudes are linear full scale (1.0 = 0 dBFS); rates in Hz.
"""

from hypothesis import strategies as st


SHORTEST_LENGTH = 3585


def signal_arguments(length_name: str, longest: int, layouts: list[str]) -> dict[str, st.SearchStrategy]:
    """Keyword strategies for `hypothesis.given`: a length in samples (named `length_name`, 3585..`longest`), an
    amplitude, a sample dtype, one of `layouts`, a sampling rate and a random seed."""
    return {
        length_name: st.integers(SHORTEST_LENGTH, longest),
        "amplitude": st.floats(1e-4, 1.0),
        "dtype": st.sampled_from(["float32", "float64", "int16"]),
        "layout": st.sampled_from(layouts),
        "rate": st.sampled_from([8000, 16000, 22050, 44100]),
        "seed": st.integers(0, 2**16),
    }
