"""Pydantic field types shared by the platform's request bodies and the stack files that feed them,
so that a name or prefix a stack file accepts is one the platform accepts too."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

from berth import names

Name = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(names.plain_text)]
LongText = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(names.multiline_text)]
Label = Annotated[
    str, StringConstraints(min_length=1, max_length=names.MAX_LABEL), AfterValidator(names.rfc1123_label)
]
