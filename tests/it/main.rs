//! Integration tests: the real daemon on 127.0.0.1:0, real SDKs and raw HTTP
//! as clients, and real Kafka-protocol brokers (librdkafka's mock cluster in
//! process; tansu as a separate process for the end-to-end test).

mod cli;
mod deploy;
mod e2e_tansu;
mod faults;
mod fuzz;
mod hostile;
mod ingest;
mod lifecycle;
mod quotas;
mod scrub_corpus;
mod sdk;
mod support;
