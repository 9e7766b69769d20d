// A registry that answers the OCI 1.1 referrers API, for detour's tests:
// go-containerregistry's in-memory pkg/registry for storage, with the
// referrers API done as the distribution spec says (its own handler keys
// artifactType on the config alone, forgets annotations, answers 404 for an
// unknown repository and sets no OCI-Subject), and an access log on stdout.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/registry"
)

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type manifest struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Config       *descriptor       `json:"config"`
	Subject      *descriptor       `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

type referrers struct {
	sync.Mutex
	// repository -> subject digest -> referrer digest -> descriptor
	byRepo map[string]map[string]map[string]descriptor
}

func (r *referrers) add(repo, subject string, d descriptor) {
	r.Lock()
	defer r.Unlock()
	if r.byRepo[repo] == nil {
		r.byRepo[repo] = map[string]map[string]descriptor{}
	}
	if r.byRepo[repo][subject] == nil {
		r.byRepo[repo][subject] = map[string]descriptor{}
	}
	r.byRepo[repo][subject][d.Digest] = d
}

func (r *referrers) list(repo, subject, artifactType string) []descriptor {
	r.Lock()
	defer r.Unlock()
	out := []descriptor{}
	for _, d := range r.byRepo[repo][subject] {
		if artifactType == "" || d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return out
}

// splitPath: /v2/<name>/<kind>/<ref> -> name, kind, ref.
func splitPath(path string) (string, string, string, bool) {
	elems := strings.Split(strings.TrimPrefix(path, "/v2/"), "/")
	if len(elems) < 3 {
		return "", "", "", false
	}
	n := len(elems)
	return strings.Join(elems[:n-2], "/"), elems[n-2], elems[n-1], true
}

type statusRecorder struct {
	http.ResponseWriter
	status  int
	subject string
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	if code == http.StatusCreated && s.subject != "" {
		s.Header().Set("OCI-Subject", s.subject)
	}
	s.ResponseWriter.WriteHeader(code)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "listen address")
	refuse := flag.Int("refuse-referrers", 0, "answer the referrers API with this status instead (e.g. 403)")
	flag.Parse()
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	refs := &referrers{byRepo: map[string]map[string]map[string]descriptor{}}
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Printf("%s %s\n", req.Method, req.URL.RequestURI())
		name, kind, ref, ok := splitPath(req.URL.Path)
		if ok && kind == "referrers" && req.Method == http.MethodGet {
			if *refuse != 0 {
				http.Error(w, `{"errors":[{"code":"DENIED"}]}`, *refuse)
				return
			}
			if !strings.HasPrefix(ref, "sha256:") || len(ref) != 71 {
				http.Error(w, `{"errors":[{"code":"DIGEST_INVALID"}]}`, http.StatusBadRequest)
				return
			}
			artifactType := req.URL.Query().Get("artifactType")
			body, _ := json.Marshal(map[string]any{
				"schemaVersion": 2,
				"mediaType":     "application/vnd.oci.image.index.v1+json",
				"manifests":     refs.list(name, ref, artifactType),
			})
			if artifactType != "" {
				w.Header().Set("OCI-Filters-Applied", "artifactType")
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			w.Write(body)
			return
		}
		if ok && kind == "manifests" && req.Method == http.MethodPut {
			body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			var m manifest
			rec := &statusRecorder{ResponseWriter: w}
			if json.Unmarshal(body, &m) == nil && m.Subject != nil {
				rec.subject = m.Subject.Digest
			}
			inner.ServeHTTP(rec, req)
			if rec.status == http.StatusCreated && m.Subject != nil {
				artifactType := m.ArtifactType
				if artifactType == "" && m.Config != nil {
					artifactType = m.Config.MediaType
				}
				mediaType := m.MediaType
				if mediaType == "" {
					mediaType = strings.Split(req.Header.Get("Content-Type"), ";")[0]
				}
				refs.add(name, m.Subject.Digest, descriptor{
					MediaType:    mediaType,
					Digest:       fmt.Sprintf("sha256:%x", sha256.Sum256(body)),
					Size:         int64(len(body)),
					ArtifactType: artifactType,
					Annotations:  m.Annotations,
				})
			}
			return
		}
		inner.ServeHTTP(w, req)
	})
	log.Fatal(http.ListenAndServe(*addr, handler))
}
