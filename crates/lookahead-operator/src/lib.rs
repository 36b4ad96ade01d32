//! lookahead-operator
