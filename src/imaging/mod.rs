//! Images in and out: [`decode`] turns untrusted bytes (files, camera buffers,
//! MQTT and HTTP payloads) into RGB within memory limits; [`encode`] makes the
//! JPEGs edgehead stores and publishes (sample thumbnails, crops for Home
//! Assistant and the console).

pub mod decode;
pub mod encode;
