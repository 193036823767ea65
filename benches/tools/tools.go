//go:build tools

// Pins the Prometheus Adapter module so `go build sigs.k8s.io/prometheus-adapter/cmd/adapter` resolves
// from this module's go.sum.
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
