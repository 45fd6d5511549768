//! Who gets a request: each classifier's learner has a bounded queue, and the
//! [`Router`] maps a classifier name (none: the first classifier, the
//! device-level topics) to it. Handing over never waits: a full queue refuses the
//! request as `busy`, which the route answers at once.

use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::{Input, ReplyTo, Request};
use crate::mqtt::{Incoming, RequestSink};

/// The answer to a request whose classifier's queue is full.
pub const BUSY: &str = "busy: too many requests waiting, try again shortly";
/// The answer to a request that arrives while the daemon stops.
pub const SHUTTING_DOWN: &str = "shutting down";

/// A classifier's name and its learner's queue.
pub type Route = (String, mpsc::Sender<Request>);

/// Every classifier's request queue, by name, in configuration order. Cheap to
/// clone; every clone sees the same routes.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<RwLock<Vec<Route>>>,
}

impl Router {
    /// Routes to `routes` (name, queue), the first for device-level requests.
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes: Arc::new(RwLock::new(routes)),
        }
    }

    /// The classifiers' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.routes
            .read()
            .map(|r| r.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// Hand `request` to the learner of `classifier` (`None`: the first) without
    /// waiting. `Err(reason)`: no such classifier, its queue is full ([`BUSY`]), or
    /// it has stopped ([`SHUTTING_DOWN`]); the request was not taken.
    pub fn try_submit(&self, classifier: Option<&str>, request: Request) -> Result<(), String> {
        let routes = self.routes.read().map_err(|_| SHUTTING_DOWN.to_string())?;
        let found = match classifier {
            None => routes.first(),
            Some(name) => routes.iter().find(|(n, _)| n == name),
        };
        let Some((_, tx)) = found else {
            return Err(format!(
                "there is no classifier \"{}\"; configured: {}",
                classifier.unwrap_or(""),
                routes
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BUSY.to_string(),
            mpsc::error::TrySendError::Closed(_) => SHUTTING_DOWN.to_string(),
        })
    }
}

impl RequestSink for Router {
    fn try_send(&self, request: Incoming) -> Result<(), String> {
        let classifier = request.classifier.clone();
        let reply = ReplyTo::Topic {
            base: request.reply.clone(),
            op: request.op.clone(),
        };
        self.try_submit(
            classifier.as_deref(),
            Request {
                input: Input::Mqtt(request),
                reply,
            },
        )
    }
}
