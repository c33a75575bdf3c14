package claimrecord

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	bundle := t.TempDir()
	if r, err := Read(bundle); r != nil || err != nil {
		t.Fatalf("Read of an empty bundle = %v, %v; want nil, nil", r, err)
	}
	want := Record{ID: "c1", Service: "web", Pid: 42, PidStart: 7}
	if err := Write(bundle, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(bundle, File))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record file: %v, %v; want mode 0600", fi, err)
	}
	got, err := Read(bundle)
	if err != nil || got == nil || *got != want {
		t.Fatalf("Read = %+v, %v; want %+v", got, err, want)
	}
	if err := Remove(bundle); err != nil {
		t.Fatal(err)
	}
	if err := Remove(bundle); err != nil {
		t.Fatalf("a second Remove: %v", err)
	}
	if r, _ := Read(bundle); r != nil {
		t.Fatalf("record left after Remove: %+v", r)
	}
	if err := os.WriteFile(filepath.Join(bundle, File), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bundle); err == nil {
		t.Fatal("a malformed record was read without error")
	}
}

func TestSiblingBundle(t *testing.T) {
	dir := t.TempDir()
	b := filepath.Join(dir, "a")
	if err := os.Mkdir(b, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(b)
	if got, want := SiblingBundle("c2"), filepath.Join(dir, "c2"); got != want {
		t.Fatalf("SiblingBundle = %q, want %q", got, want)
	}
}
