//! Integration tests for dvdcli (see the issue).
