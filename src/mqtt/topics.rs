//! MQTT topic names, all below `<base_topic>/<device_id>`.

/// Topic segments; the full names are built by [`Topics`].
pub const AVAILABILITY: &str = "availability";
pub const PREDICTION: &str = "prediction";
pub const STATUS: &str = "status";
pub const HEAD: &str = "head";
pub const REQUEST: &str = "request";
pub const RESPONSE: &str = "response";

/// Payloads of the availability topic.
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub base: String,
    /// Retained `online` / `offline` (the last will).
    pub availability: String,
    /// One JSON message per published prediction.
    pub prediction: String,
    /// Retained daemon status: source state, counters, head.
    pub status: String,
    /// Retained description and quality of the current head.
    pub head: String,
    /// Subscription filter for requests: `<base>/request/#`.
    pub request_filter: String,
}

impl Topics {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            availability: format!("{base}/{AVAILABILITY}"),
            prediction: format!("{base}/{PREDICTION}"),
            status: format!("{base}/{STATUS}"),
            head: format!("{base}/{HEAD}"),
            request_filter: format!("{base}/{REQUEST}/#"),
        }
    }

    /// Where the answer to request `op` goes.
    pub fn response(&self, op: &str) -> String {
        format!("{}/{RESPONSE}/{op}", self.base)
    }

    /// For a topic under `<base>/request/`, the operation and any further levels
    /// (`request/add_sample/cat` → `("add_sample", Some("cat"))`).
    pub fn parse_request<'t>(&self, topic: &'t str) -> Option<(&'t str, Option<&'t str>)> {
        let rest = topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix('/')?
            .strip_prefix(REQUEST)?
            .strip_prefix('/')?;
        match rest.split_once('/') {
            Some((op, arg)) if !op.is_empty() => Some((op, Some(arg))),
            None if !rest.is_empty() => Some((rest, None)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_topics_below_the_device() {
        let t = Topics::new("edgehead/cam1");
        assert_eq!(t.availability, "edgehead/cam1/availability");
        assert_eq!(t.prediction, "edgehead/cam1/prediction");
        assert_eq!(t.request_filter, "edgehead/cam1/request/#");
        assert_eq!(
            t.response("add_sample"),
            "edgehead/cam1/response/add_sample"
        );
    }

    #[test]
    fn parses_request_topics() {
        let t = Topics::new("edgehead/cam1");
        assert_eq!(
            t.parse_request("edgehead/cam1/request/classes"),
            Some(("classes", None))
        );
        assert_eq!(
            t.parse_request("edgehead/cam1/request/add_sample/cat"),
            Some(("add_sample", Some("cat")))
        );
        assert_eq!(
            t.parse_request("edgehead/cam1/request/add_sample/a/b"),
            Some(("add_sample", Some("a/b")))
        );
        assert_eq!(t.parse_request("edgehead/cam1/request/"), None);
        assert_eq!(t.parse_request("edgehead/cam1/requests/x"), None);
        assert_eq!(t.parse_request("edgehead/cam2/request/x"), None);
        assert_eq!(t.parse_request("edgehead/cam1"), None);
    }
}
