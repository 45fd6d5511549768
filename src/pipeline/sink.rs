//! Where predictions go ([`PredictionSink`]): MQTT and the Home Assistant bridge
//! in the daemon ([`MqttSink`]), a vector in tests and the benchmarks.

use std::time::Duration;

use crate::classifier::Classifier;
use crate::config::HomeAssistantConfig;
use crate::homeassistant::{Event, Notifier};
use crate::mqtt::payload::Prediction;
use crate::mqtt::Publisher;

/// Where predictions go: MQTT in the daemon, a vector in tests and `eval`.
pub trait PredictionSink: Send {
    /// A prediction of `classifier`; whether it was sent.
    fn publish(&mut self, classifier: &Classifier, prediction: &Prediction) -> bool;

    /// `classifier` looked at a frame (ran the backbone or found the crop
    /// unchanged): its published state is still current. Called at most once per
    /// [`ALIVE_EVERY`] per classifier.
    fn alive(&mut self, _classifier: &Classifier) {}

    /// How often the sink wants each classifier's crop as JPEG (and at every
    /// change of the stable label), and the JPEG's longest side in pixels;
    /// `None`: never.
    fn image_every(&self) -> Option<(Duration, u32)> {
        None
    }

    /// The latest crop of `classifier`, JPEG.
    fn image(&mut self, _classifier: &Classifier, _jpeg: Vec<u8>) {}
}

/// How often [`PredictionSink::alive`] is called per classifier at most.
pub const ALIVE_EVERY: Duration = Duration::from_secs(1);

/// Predictions of the daemon: published on each classifier's prediction topic,
/// and told to the Home Assistant bridge (the stable state, liveness, the crop).
pub struct MqttSink {
    pub publisher: Publisher,
    pub notifier: Notifier,
    /// `homeassistant.image_interval_secs` and `image_max_side`; `None`: no image.
    pub image_every: Option<(Duration, u32)>,
}

impl MqttSink {
    /// The sink of the daemon: images as `[homeassistant]` asks.
    pub fn new(publisher: Publisher, notifier: Notifier, ha: &HomeAssistantConfig) -> Self {
        Self {
            publisher,
            notifier,
            image_every: (ha.image_interval_secs > 0.0).then(|| {
                (
                    Duration::from_secs_f64(ha.image_interval_secs),
                    ha.image_max_side,
                )
            }),
        }
    }
}

impl PredictionSink for MqttSink {
    fn publish(&mut self, classifier: &Classifier, prediction: &Prediction) -> bool {
        let sent = match serde_json::to_vec(prediction) {
            Ok(bytes) => self
                .publisher
                .try_publish_prediction(&classifier.topics.prediction, bytes),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode prediction");
                false
            }
        };
        // Also when the prediction could not be sent (disconnected, queue full):
        // the retained state is published again after the next connect, while
        // the publish rule will not repeat the prediction.
        self.notifier.notify(Event::Prediction {
            classifier: classifier.name().to_string(),
            label: prediction.label.clone(),
            confidence: prediction.confidence,
            seq: prediction.seq,
            captured_at: prediction.captured_at.clone(),
            head: prediction.head.clone(),
        });
        sent
    }

    fn alive(&mut self, classifier: &Classifier) {
        self.notifier.notify(Event::Alive {
            classifier: classifier.name().to_string(),
        });
    }

    fn image_every(&self) -> Option<(Duration, u32)> {
        self.image_every
    }

    fn image(&mut self, classifier: &Classifier, jpeg: Vec<u8>) {
        self.notifier.notify(Event::Image {
            classifier: classifier.name().to_string(),
            jpeg,
        });
    }
}
