//! What every HTTP handler receives: the server's [`Services`] and the state of the sync
//! transports (sliding sync connections), which nothing below the API keeps.

use std::{ops::Deref, sync::Arc};

use crate::{services::Services, sync::sliding::Connections};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub services: Services,
    /// Sliding sync connections: what each has been sent.
    pub sliding: Connections,
}

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(Inner {
            services,
            sliding: Connections::default(),
        }))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Deref for Inner {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}
