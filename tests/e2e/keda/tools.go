//go:build tools

// Keeps KEDA's module (and so its cmd/operator and cmd/adapter) in this module's graph.
package tools

import (
	_ "github.com/kedacore/keda/v2/pkg/scalers"
)
