"""``report --format json``: the documented shape of :meth:`Report.as_json`, compact (a
year by interval is 105,120 rows, read by scripts; ``jq .`` indents it).

Written as the rows stream: each row's text is made by one format string (its strings
are compliance states and ``...Z`` instants, which JSON writes as they are, and the
tags, escaped once), so no object per row and no whole document is held. The bytes are those of
``json.dumps(report.as_json(), separators=(",", ":"))``, which the tests check.
"""

from __future__ import annotations

import json
from typing import TextIO

from ccx_agent.history.report import Report
from ccx_agent.licensing.timeutil import iso

#: Rows joined per write.
CHUNK = 1000


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def write(report: Report, out: TextIO) -> None:
    out.write(
        f'{{"license_type":{_dumps(report.license_type)},"from":{_dumps(iso(report.start))},'
        f'"to":{_dumps(iso(report.end))},"by":{_dumps(report.by)},"rows":['
    )
    # Tags as JSON strings (escaped, should a tag ever need it); states and instants
    # never do.
    tags = {t: _dumps(t) for t in report.tags}
    buf: list[str] = []
    add = buf.append
    first = True
    for s, e, tag, usage, ent, rep, state, n, nd in report.rows:
        add(
            f'{{"start":"{s}","end":"{e}","tag":{tags[tag]},'
            f'"usage":{"null" if usage is None else usage},'
            f'"entitlement":{"null" if ent is None else ent},'
            f'"reported":{"null" if rep is None else rep},'
            f'"state":"{state}","intervals":{n},"no_data":{nd}}}'
        )
        if len(buf) >= CHUNK:
            out.write(("" if first else ",") + ",".join(buf))
            buf.clear()
            first = False
    if buf:
        out.write(("" if first else ",") + ",".join(buf))
    out.write(
        f'],"summary":{_dumps([s.as_json() for s in report.summary])},'
        f'"alerts":{_dumps([a.as_json() for a in report.alerts])}}}\n'
    )
