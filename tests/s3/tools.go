//go:build tools

// The S3-compatible server the storage tests start: versitygw over a
// directory (its posix backend), pinned in go.mod.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"
