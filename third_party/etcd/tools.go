//go:build tools

// Package tools records the command packages scripts/install-kubernetes.sh builds, so that
// `go mod tidy` keeps their dependencies in go.sum. It is never compiled (build tag "tools").
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
