//! A value replaced as a whole while the server runs (the TLS settings, the request-header
//! settings): readers take the current one and keep it for as long as they need it.

use std::sync::{Arc, PoisonError, RwLock};

/// A value replaced as a whole while readers keep the one they took.
pub struct Shared<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Self::from_arc(Arc::new(value))
    }

    pub fn from_arc(value: Arc<T>) -> Self {
        Self(Arc::new(RwLock::new(value)))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_the_value_they_took() {
        let shared = Shared::new(1);
        let taken = shared.get();
        shared.set(Arc::new(2));
        assert_eq!((*taken, *shared.get()), (1, 2));
        let clone = shared.clone();
        clone.set(Arc::new(3));
        assert_eq!(*shared.get(), 3);
    }
}
