//! Integration tests for docker (see the issue).
