//go:build tools

// Keeps the main packages build.sh builds by import path in the module graph,
// so that `go mod tidy` keeps what they need.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
