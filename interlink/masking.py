"""Masking of sensitive values wherever data is shown to people (artifacts, forms, reports)."""

import re

import pandas as pd

EMAIL = re.compile(r"([^@\s])[^@\s]*@([^@\s]+)")
LOCAL_PART = re.compile(r"""([^\s@"'<>()\[\],;:])[^\s@"'<>()\[\],;:]*(?=@)""")


def mask(value: object) -> object:
    """`a***@example.com` for an email, `A***` for other text; missing values stay missing."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return value
    text = str(value)
    if EMAIL.fullmatch(text):
        return EMAIL.sub(r"\1***@\2", text)
    return text[:1] + "***" if text else text


def mask_frame(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """A copy of `frame` with the `columns` it has masked."""
    masked = frame.copy()
    for column in set(columns) & set(frame.columns):
        masked[column] = masked[column].map(mask)
    return masked


def mask_emails(text: str) -> str:
    """`text` with the local part of every email address in it masked: `alice@example.com` → `a***@example.com`."""
    return LOCAL_PART.sub(r"\1***", text)
