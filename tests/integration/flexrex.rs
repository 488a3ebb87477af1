//! Integration tests for flexrex (see the issue).
