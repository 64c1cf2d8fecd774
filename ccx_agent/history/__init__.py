"""The instance's past, for operators: the License Consumption Report (``report``), the
alert log (``alerts``) and the license feature list (``features``); see docs/reports.md.

Everything here only reads the database, from a read snapshot: it runs beside the daemon
and never creates a state directory or a database.
"""
