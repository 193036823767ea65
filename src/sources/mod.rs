//! Replica samples: vLLM exposition parsing, the pod scraper and its window cache, the Prometheus client.

pub mod exposition;
