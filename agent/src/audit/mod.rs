//! Hash-chained audit log in SQLite (issue 3). Filled in by the audit work.
