//! Errors tied to a place in a file (file:line:column with an excerpt), collected and shown together.
