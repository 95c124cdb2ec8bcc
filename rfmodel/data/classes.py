"""The class list. Its order is part of every trained model (it travels with the weights)."""

CLASSES: tuple[str, ...] = (
    "noise",
    "ook",
    "4ask",
    "bpsk",
    "qpsk",
    "8psk",
    "16qam",
    "64qam",
    "2fsk",
    "gfsk",
    "gmsk",
    "am",
    "fm",
    "ofdm",
)

NOISE = "noise"


def class_index(label: str, classes: tuple[str, ...] = CLASSES) -> int:
    try:
        return classes.index(label)
    except ValueError:
        raise ValueError(f"label: unknown class {label!r}; known: {', '.join(classes)}") from None
