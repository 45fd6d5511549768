//! Integration tests: one binary (tract makes every extra test binary a long link).
//! They start real mosquitto brokers and the real daemon with the real backbone.

mod backbone;
mod broker;
mod browser;
mod bundles;
mod classifiers;
mod console;
mod daemon;
mod disk;
mod harness;
mod homeassistant;
mod httpcam;
mod layers;
mod learning;
mod requests;
mod sources;
