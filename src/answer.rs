//! The envelope of every answer to a request, whichever way it came (MQTT or
//! HTTP): `{"status": "ok", "data": ..., "transaction": ...}` or `{"status":
//! "error", "error": "...", "data": null, "transaction": ...}`, following the
//! request/response convention of Zigbee2MQTT (the caller's `transaction` echoed).

use serde_json::{json, Value};

/// A successful answer carrying `data`.
pub fn ok(data: Value, transaction: Option<&Value>) -> Value {
    let mut v = json!({ "status": "ok", "data": data });
    if let Some(t) = transaction {
        v["transaction"] = t.clone();
    }
    v
}

/// A refusal with the reason the caller reads.
pub fn error(error: &str, transaction: Option<&Value>) -> Value {
    let mut v = json!({ "status": "error", "error": error, "data": Value::Null });
    if let Some(t) = transaction {
        v["transaction"] = t.clone();
    }
    v
}

/// Whether an answer is a success.
pub fn is_ok(answer: &Value) -> bool {
    answer["status"] == "ok"
}

/// The caller's `transaction` field, when `payload` is a JSON object with one
/// (for answering a request that is refused before it is parsed).
pub fn transaction_of(payload: &[u8]) -> Option<Value> {
    if payload.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Value>(payload)
        .ok()?
        .get("transaction")
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_echo_the_transaction() {
        let t = json!("abc-1");
        let answer = ok(json!({"n": 1}), Some(&t));
        assert_eq!(
            answer,
            json!({"status": "ok", "data": {"n": 1}, "transaction": "abc-1"})
        );
        let err = error("bad label", None);
        assert_eq!(
            err,
            json!({"status": "error", "error": "bad label", "data": null})
        );
        assert_eq!(transaction_of(br#"{"transaction": 7}"#), Some(json!(7)));
        assert_eq!(transaction_of(b"jpeg"), None);
    }
}
