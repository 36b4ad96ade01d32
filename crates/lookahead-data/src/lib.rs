//! lookahead-data
