//go:build linux

package harness

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tarball is a valid OCI image layout: every blob is stored under its
// own digest and the index names the image for containerd's importer.
func TestBuildImage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img.tar")
	if err := BuildImage(p, ImageConfig{Name: "docker.io/library/busybox:t", Cmd: []string{"sh"}, Files: map[string]string{"/etc/x": "y"}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	for name, b := range files {
		if hexd, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != hexd {
				t.Errorf("blob %s has the wrong digest", name)
			}
		}
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/busybox:t" ||
		index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "t" {
		t.Fatalf("index = %+v", index)
	}
	if _, ok := files["blobs/sha256/"+strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")]; !ok {
		t.Fatal("index names a manifest that is not in the tarball")
	}
}
