//! `picaops run`: one ad-hoc command on many hosts.
