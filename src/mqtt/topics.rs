//! MQTT topic names, all below `<base_topic>/<device_id>` (the device base).
//!
//! Device-level: `availability`, `status`, and `request/<op>` / `response/<op>`,
//! which address the first classifier ([`Topics`]). Per classifier, below
//! `<base>/<name>/`: `prediction`, `head`, `state`, `event`, `image`,
//! `teach_label`, `last_result`, `request/<op>`, `response/<op>`
//! ([`ClassifierTopics`]).

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
    /// Retained daemon status: source state, counters, head.
    pub status: String,
    /// Subscription filter for device-level requests: `<base>/request/#`.
    pub request_filter: String,
    /// Subscription filter for every classifier's requests: `<base>/+/request/#`.
    pub classifier_request_filter: String,
}

/// Which requests a request topic addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'t> {
    /// `<base>/request/...`: the first classifier.
    Device,
    /// `<base>/<name>/request/...`.
    Classifier(&'t str),
}

impl Topics {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            availability: format!("{base}/{AVAILABILITY}"),
            status: format!("{base}/{STATUS}"),
            request_filter: format!("{base}/{REQUEST}/#"),
            classifier_request_filter: format!("{base}/+/{REQUEST}/#"),
        }
    }

    /// Where the answer to device-level request `op` goes.
    pub fn response(&self, op: &str) -> String {
        format!("{}/{RESPONSE}/{op}", self.base)
    }

    /// The response topic prefix for requests that came by `route`:
    /// `<base>/response` or `<base>/<name>/response`.
    pub fn reply_base(&self, route: Route) -> String {
        match route {
            Route::Device => format!("{}/{RESPONSE}", self.base),
            Route::Classifier(name) => format!("{}/{name}/{RESPONSE}", self.base),
        }
    }

    /// For a request topic, who it addresses, the operation and any further levels
    /// (`<base>/door/request/add_sample/cat` → `(Classifier("door"), "add_sample", Some("cat"))`).
    pub fn parse_request<'t>(
        &self,
        topic: &'t str,
    ) -> Option<(Route<'t>, &'t str, Option<&'t str>)> {
        let rest = topic.strip_prefix(self.base.as_str())?.strip_prefix('/')?;
        let (route, rest) = match rest.strip_prefix(REQUEST).and_then(|r| r.strip_prefix('/')) {
            Some(r) => (Route::Device, r),
            None => {
                let (name, r) = rest.split_once('/')?;
                let r = r.strip_prefix(REQUEST)?.strip_prefix('/')?;
                if name.is_empty() {
                    return None;
                }
                (Route::Classifier(name), r)
            }
        };
        let parsed = match rest.split_once('/') {
            Some((op, arg)) if !op.is_empty() => Some((op, Some(arg))),
            None if !rest.is_empty() => Some((rest, None)),
            _ => None,
        };
        parsed.map(|(op, arg)| (route, op, arg))
    }
}

/// The topics of one classifier, all below `<base>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierTopics {
    pub name: String,
    /// One JSON message per published prediction.
    pub prediction: String,
    /// Retained description and quality of the head.
    pub head: String,
    /// Retained stable state for dashboards: `{"state", "label", "confidence",
    /// "seq", "since", "head", "classifier"}` (see [`crate::homeassistant`]).
    pub state: String,
    /// Retained copy of `state`, read by Home Assistant's label sensor (which is
    /// current by `availability`, not by `expire_after`).
    pub label: String,
    /// Retained `online` while the classifier's frames arrive, `offline` once
    /// none came for `homeassistant.expire_after_secs` (and at start, until the
    /// first frame).
    pub availability: String,
    /// One JSON message per change of the stable state: `{"event_type",
    /// "previous", "confidence", "seq"}`.
    pub event: String,
    /// Retained JPEG of the latest crop, at a bounded rate.
    pub image: String,
    /// Retained plain-text label the dashboard's "Teach current frame" uses.
    pub teach_label: String,
    /// Retained summary of the last teaching request: `{"op", "status", "message", ...}`.
    pub last_result: String,
    /// `<base>/<name>`.
    base: String,
}

impl ClassifierTopics {
    /// The topics of classifier `name` below the device base. Requests arrive on
    /// `<base>/<name>/request/#`, one subscription for all classifiers
    /// ([`Topics::classifier_request_filter`]).
    pub fn new(device_base: &str, name: &str) -> Self {
        let base = format!("{device_base}/{name}");
        Self {
            name: name.to_string(),
            prediction: format!("{base}/{PREDICTION}"),
            head: format!("{base}/{HEAD}"),
            state: format!("{base}/state"),
            label: format!("{base}/label"),
            availability: format!("{base}/availability"),
            event: format!("{base}/event"),
            image: format!("{base}/image"),
            teach_label: format!("{base}/teach_label"),
            last_result: format!("{base}/last_result"),
            base,
        }
    }

    /// The request topic of operation `op`: `<base>/<name>/request/<op>`.
    pub fn request(&self, op: &str) -> String {
        format!("{}/{REQUEST}/{op}", self.base)
    }

    /// Where answers to this classifier's requests go: `<base>/<name>/response`.
    pub fn reply_base(&self) -> String {
        format!("{}/{RESPONSE}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_topics_below_the_device() {
        let t = Topics::new("edgehead/cam1");
        assert_eq!(t.availability, "edgehead/cam1/availability");
        assert_eq!(t.request_filter, "edgehead/cam1/request/#");
        assert_eq!(
            t.response("add_sample"),
            "edgehead/cam1/response/add_sample"
        );
    }

    #[test]
    fn parses_request_topics() {
        let t = Topics::new("edgehead/cam1");
        use Route::*;
        assert_eq!(
            t.parse_request("edgehead/cam1/request/classes"),
            Some((Device, "classes", None))
        );
        assert_eq!(
            t.parse_request("edgehead/cam1/request/add_sample/cat"),
            Some((Device, "add_sample", Some("cat")))
        );
        assert_eq!(
            t.parse_request("edgehead/cam1/request/add_sample/a/b"),
            Some((Device, "add_sample", Some("a/b")))
        );
        assert_eq!(
            t.parse_request("edgehead/cam1/door/request/add_sample/open"),
            Some((Classifier("door"), "add_sample", Some("open")))
        );
        assert_eq!(
            t.parse_request("edgehead/cam1/door/request/head"),
            Some((Classifier("door"), "head", None))
        );
        assert_eq!(t.parse_request("edgehead/cam1/door/response/head"), None);
        assert_eq!(t.parse_request("edgehead/cam1//request/head"), None);
        assert_eq!(t.parse_request("edgehead/cam1/request/"), None);
        assert_eq!(t.parse_request("edgehead/cam1/requests/x"), None);
        assert_eq!(t.parse_request("edgehead/cam2/request/x"), None);
        assert_eq!(t.parse_request("edgehead/cam1"), None);
    }
}
