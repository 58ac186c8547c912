//go:build tools

// Package tools records the command package scripts/install-kubernetes.sh builds, so that
// `go mod tidy` keeps its dependencies in go.sum. It is never compiled (build tag "tools").
package tools

import (
	_ "github.com/coredns/coredns"
)
