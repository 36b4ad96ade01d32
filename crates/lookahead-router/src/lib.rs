//! lookahead-router
