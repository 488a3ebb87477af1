//! (see the issue)
