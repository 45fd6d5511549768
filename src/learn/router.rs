//! Who gets a request: each classifier's learner has a bounded queue, and the
//! [`Router`] maps a classifier name (none: the first classifier, the
//! device-level topics) to it; operations on the set of classifiers
//! ([`OpKind::is_manager`]) go to the classifier manager's queue, whichever
//! route they came by. Handing over never waits: a full queue refuses the request
//! as `busy`, which the route answers at once. The routes change while the daemon
//! runs (classifiers created, renamed, deleted); every clone sees the same routes.

use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::ops::OpKind;
use super::{Input, ReplyTo, Request};
use crate::mqtt::{Incoming, RequestSink};

/// The answer to a request whose classifier's queue is full.
pub const BUSY: &str = "busy: too many requests waiting, try again shortly";
/// The answer to a request that arrives while the daemon stops.
pub const SHUTTING_DOWN: &str = "shutting down";
/// How the answer to an operation turned off by `learn.disabled_operations`
/// begins.
pub const DISABLED: &str = "refused: this operation is turned off on this device";

/// A classifier's name and its learner's queue.
pub type Route = (String, mpsc::Sender<Request>);

#[derive(Default)]
struct Routes {
    classifiers: Vec<Route>,
    manager: Option<mpsc::Sender<Request>>,
    /// Operations refused whichever route they come by (MQTT or the console).
    disabled: Vec<OpKind>,
}

/// Every classifier's request queue, by name, in order, and the manager's.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<RwLock<Routes>>,
}

impl Router {
    /// Routes to `classifiers` (name, queue), the first for device-level
    /// requests, and to the classifier manager's queue.
    pub fn new(classifiers: Vec<Route>, manager: Option<mpsc::Sender<Request>>) -> Self {
        Self {
            routes: Arc::new(RwLock::new(Routes {
                classifiers,
                manager,
                disabled: Vec::new(),
            })),
        }
    }

    /// Refuse `ops` from now on, before anything is parsed or queued
    /// (`learn.disabled_operations`): answered [`DISABLED`], nothing changes.
    pub fn disable(&self, ops: Vec<OpKind>) {
        if let Ok(mut r) = self.routes.write() {
            r.disabled = ops;
        }
    }

    /// Replace the classifiers' routes (the set changed at run time).
    pub fn set_classifiers(&self, classifiers: Vec<Route>) {
        if let Ok(mut r) = self.routes.write() {
            r.classifiers = classifiers;
        }
    }

    /// Drop every route: requests are answered [`SHUTTING_DOWN`] and the queues
    /// close, so the learners and the manager finish.
    pub fn close(&self) {
        if let Ok(mut r) = self.routes.write() {
            *r = Routes::default();
        }
    }

    /// The classifiers' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.routes
            .read()
            .map(|r| r.classifiers.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    }

    /// Hand `request` to the learner of `classifier` (`None`: the first), or to
    /// the manager when `kind` is one of its operations, without waiting.
    /// `Err(reason)`: no such classifier, its queue is full ([`BUSY`]), or the
    /// daemon stops ([`SHUTTING_DOWN`]); the request was not taken.
    pub fn try_submit(
        &self,
        classifier: Option<&str>,
        kind: Option<OpKind>,
        request: Request,
    ) -> Result<(), String> {
        let routes = self.routes.read().map_err(|_| SHUTTING_DOWN.to_string())?;
        if let Some(k) = kind.filter(|k| routes.disabled.contains(k)) {
            return Err(format!(
                "{DISABLED} ({} is listed in learn.disabled_operations)",
                k.name()
            ));
        }
        let tx = if kind.is_some_and(OpKind::is_manager) {
            routes.manager.as_ref()
        } else {
            match classifier {
                None => routes.classifiers.first().map(|(_, tx)| tx),
                Some(name) => match routes.classifiers.iter().find(|(n, _)| n == name) {
                    Some((_, tx)) => Some(tx),
                    None if routes.classifiers.is_empty() => None,
                    None => {
                        return Err(format!(
                            "there is no classifier \"{name}\"; there are: {}",
                            routes
                                .classifiers
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
                },
            }
        };
        let Some(tx) = tx else {
            return Err(SHUTTING_DOWN.to_string());
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
        let kind = OpKind::from_name(&request.op);
        let reply = ReplyTo::Topic {
            base: request.reply.clone(),
            op: request.op.clone(),
        };
        self.try_submit(
            classifier.as_deref(),
            kind,
            Request {
                input: Input::Raw(request.into()),
                reply,
            },
        )
    }
}
