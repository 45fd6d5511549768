//! The daemon's tasks under supervision: each named by its [`Stage`], awaited
//! together so that the first to fail is noticed, and stopped one stage after the
//! other within the grace period (vector's topology: sources first, then what
//! reads from them, the MQTT connection last).

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// The tasks, in the order they are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Capture,
    Inference,
    Learn,
    Status,
    HomeAssistant,
    Mqtt,
    /// The console's HTTP server.
    Web,
    /// The embedded broker's thread: never stopped (rumqttd cannot be), only
    /// watched.
    Broker,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Inference => "inference",
            Stage::Learn => "learn",
            Stage::Status => "status",
            Stage::HomeAssistant => "homeassistant",
            Stage::Mqtt => "mqtt",
            Stage::Broker => "embedded broker",
            Stage::Web => "web console",
        }
    }
}

/// How a task ended: `Ok` when it returned normally, else why not.
pub type Ended = Result<(), String>;

/// The running tasks.
#[derive(Default)]
pub struct Supervisor {
    set: JoinSet<Ended>,
    stages: HashMap<Id, Stage>,
    /// Tasks that have ended, and how.
    ended: HashMap<Stage, Ended>,
}

impl Supervisor {
    /// Run `task` as `stage`.
    pub fn spawn(&mut self, stage: Stage, task: impl Future<Output = Ended> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.stages.insert(handle.id(), stage);
    }

    /// Whether `stage` has ended.
    pub fn has_ended(&self, stage: Stage) -> bool {
        self.ended.contains_key(&stage)
    }

    /// The next task to end, and how (a panic is an `Err`); `None` when none runs.
    pub async fn next(&mut self) -> Option<(Stage, Ended)> {
        let (id, ended) = match self.set.join_next_with_id().await? {
            Ok((id, r)) => (id, r),
            Err(e) => (
                e.id(),
                Err(if e.is_panic() {
                    format!("panicked: {e}")
                } else {
                    e.to_string()
                }),
            ),
        };
        let stage = self.stages.remove(&id).unwrap_or(Stage::Broker);
        self.ended.insert(stage, ended.clone());
        Some((stage, ended))
    }

    /// Wait until `stage` has ended, or `deadline`; `Err(name)` when it still runs.
    pub async fn wait(
        &mut self,
        stage: Stage,
        deadline: tokio::time::Instant,
    ) -> Result<(), &'static str> {
        while !self.has_ended(stage) {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(_) => return Err(stage.name()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn stages_are_awaited_by_name_and_a_stuck_one_is_named() {
        let mut s = Supervisor::default();
        s.spawn(Stage::Status, async { Ok(()) });
        s.spawn(Stage::Learn, async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        s.spawn(Stage::Mqtt, async { panic!("boom") });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        assert_eq!(s.wait(Stage::Status, deadline).await, Ok(()));
        assert_eq!(s.wait(Stage::Mqtt, deadline).await, Ok(()));
        assert!(s.ended[&Stage::Mqtt]
            .as_ref()
            .is_err_and(|e| e.contains("panicked")));
        assert_eq!(s.wait(Stage::Learn, deadline).await, Err("learn"));
    }
}
