"""Parsing XML from a server we do not control, safely and fast.

The UCCX Admin API and Finesse answer in XML. A hostile or broken server could send an
"XML bomb" (entities that expand to gigabytes) or external entities that read local
files. Both need a document type declaration: the body is decoded as UTF-8 (strictly, so
no other encoding can hide one) and refused if it holds ``<!DOCTYPE`` or ``<!ENTITY``;
only then is it handed to the C parser of :mod:`xml.etree.ElementTree`. Without a DTD,
expat knows the five predefined entities and character references only, so nothing can
expand. (``defusedxml`` does the same with more code paths; it is not needed for that.)
The size of a body is capped where it is read (see :mod:`ccx_agent.sources.uccx`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

_FORBIDDEN = ("<!DOCTYPE", "<!ENTITY")


class XmlError(ValueError):
    """A body that is not safe, well-formed XML with the expected root; says why."""


def parse_xml(body: bytes, root: str) -> ET.Element:
    """Parse ``body``, a document whose root element must be ``root``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XmlError(f"not UTF-8 text (byte {exc.start})") from None
    for marker in _FORBIDDEN:
        if marker in text:
            raise XmlError(f"holds a {marker} declaration, refused (possible XML bomb)")
    parser = ET.XMLParser()  # noqa: S314 - no DTD can reach it (checked above)
    try:
        parser.feed(text)
        element = parser.close()
    except ET.ParseError as exc:
        line, column = exc.position
        # str(exc) is expat's reason plus the same position; keep the reason only.
        reason = str(exc).split(":", 1)[0]
        raise XmlError(f"not well-formed XML: {reason} (line {line}, column {column})") from None
    if element.tag != root:
        raise XmlError(f"expected a <{root}> document, got <{element.tag}>")
    return element
