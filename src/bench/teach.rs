//! `bench --teach`: the time from a labeled sample over MQTT to its answer, and to
//! the first prediction of a head that knows its label, on the daemon run
//! in-process.

use std::time::{Duration, Instant};

use serde::Serialize;

/// What `bench --teach` measured.
#[derive(Debug, Clone, Serialize)]
pub struct TeachLatency {
    /// From publishing a labeled sample to its `ok` response (decode, embed, store).
    pub response_ms: Vec<f64>,
    /// From publishing a labeled sample to the first prediction made by a head that
    /// knows its label (adds the debounce, the training and the next frame).
    pub first_prediction_ms: Vec<f64>,
    pub debounce_ms: u64,
}

/// Run the daemon in-process (embedded broker on a free port, files source on the
/// fixture images at 10 fps, a temporary state directory), teach it `rounds` new
/// classes one by one over MQTT, and time each.
pub fn teach_latency(
    mut raw: crate::config::RawConfig,
    images: &std::path::Path,
    rounds: usize,
) -> anyhow::Result<TeachLatency> {
    use anyhow::Context;
    use rumqttc::QoS;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let state = std::env::temp_dir().join(format!("edgehead-bench-{}", std::process::id()));
    raw.device_id = "bench".into();
    raw.state_dir = state.clone();
    raw.mqtt.host = String::new();
    raw.mqtt.embedded_broker.listen = format!("127.0.0.1:{port}");
    raw.source.kind = crate::config::SourceKind::Files;
    raw.source.files.path = images.display().to_string();
    raw.source.files.fps = 10.0;
    raw.source.files.repeat = true;
    raw.homeassistant.discovery = false;
    raw.web.enabled = false;
    let debounce_ms = raw.learn.debounce_ms;
    let settings = crate::config::validate(raw).map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = settings.topic_base.clone();
    // The first classifier's predictions (the built-in `default` over the whole frame).
    let prediction_topic = match settings.classifiers.first() {
        Some(c) => format!("{base}/{}/prediction", c.name),
        None => anyhow::bail!("no classifier"),
    };
    let files: Vec<std::path::PathBuf> = crate::source::files::list(&images.display().to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let daemon = crate::app::Daemon::build(settings).context("start the daemon")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        let s2 = stop.clone();
        let running = tokio::spawn(daemon.run(async move { s2.cancelled().await }));
        let (client, mut rx) = listen(
            port,
            &[
                (prediction_topic, QoS::AtMostOnce),
                (format!("{base}/response/add_sample"), QoS::AtLeastOnce),
            ],
        )
        .await?;
        // Wait for the first prediction: the pipeline is up.
        loop {
            let (_, topic, _) = rx.recv().await.context("no messages")?;
            if topic.ends_with("/prediction") {
                break;
            }
        }
        let mut out = TeachLatency {
            response_ms: Vec::new(),
            first_prediction_ms: Vec::new(),
            debounce_ms,
        };
        for round in 0..rounds {
            let label = format!("class{round}");
            let bytes = std::fs::read(&files[round % files.len()])?;
            let (response, first) = teach_one(&client, &mut rx, &base, &label, bytes).await?;
            out.response_ms.push(response);
            out.first_prediction_ms.push(first);
        }
        stop.cancel();
        let _ = running.await;
        Ok::<_, anyhow::Error>(out)
    });
    let _ = std::fs::remove_dir_all(&state);
    result
}

/// Publish `bytes` as a sample of the new class `label`; the milliseconds to its
/// answer and to the first prediction naming the class.
async fn teach_one(
    client: &rumqttc::AsyncClient,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
    base: &str,
    label: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<(f64, f64)> {
    use anyhow::Context;
    let t0 = Instant::now();
    client
        .publish(
            format!("{base}/request/add_sample/{label}"),
            rumqttc::QoS::AtLeastOnce,
            false,
            bytes,
        )
        .await?;
    let ms = |at: Instant| (at - t0).as_secs_f64() * 1000.0;
    let mut response = None;
    loop {
        let (at, topic, payload) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("timed out")?
            .context("client gone")?;
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
        if topic.ends_with("/response/add_sample") && response.is_none() {
            anyhow::ensure!(v["status"] == "ok", "add_sample failed: {v}");
            response = Some(ms(at));
        } else if topic.ends_with("/prediction")
            && v["top"]
                .as_array()
                .is_some_and(|t| t.iter().any(|s| s["label"] == label))
        {
            return Ok((response.unwrap_or(f64::NAN), ms(at)));
        }
    }
}

/// A message received: when, on which topic, the payload.
type Received = (Instant, String, Vec<u8>);

/// An MQTT client of the broker on 127.0.0.1:`port` subscribed to `topics`, and
/// what it receives.
async fn listen(
    port: u16,
    topics: &[(String, rumqttc::QoS)],
) -> anyhow::Result<(
    rumqttc::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<Received>,
)> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let mut opts = MqttOptions::new("edgehead-bench-client", "127.0.0.1", port);
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    for (topic, qos) in topics {
        client.subscribe(topic.clone(), *qos).await?;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx
                        .send((Instant::now(), p.topic.clone(), p.payload.to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Ok((client, rx))
}
