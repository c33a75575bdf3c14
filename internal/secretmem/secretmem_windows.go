package secretmem

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

func alloc(n int) ([]byte, bool, error) {
	page := os.Getpagesize()
	size := page
	if n > 0 {
		size = (n + page - 1) &^ (page - 1)
	}
	addr, err := windows.VirtualAlloc(0, uintptr(size), windows.MEM_COMMIT|windows.MEM_RESERVE, windows.PAGE_READWRITE)
	if err != nil {
		return nil, false, fmt.Errorf("secretmem: VirtualAlloc %d bytes: %w", size, err)
	}
	// The mapping is outside the Go heap, so turning its address into a
	// pointer is sound; the double conversion says so to go vet.
	region := unsafe.Slice((*byte)(*(*unsafe.Pointer)(unsafe.Pointer(&addr))), size)
	// VirtualLock is bounded by the process working set; where it refuses,
	// the bytes stay off the Go heap and are still zeroed on Free.
	locked := windows.VirtualLock(addr, uintptr(size)) == nil
	return region, locked, nil
}

func release(region []byte) error {
	addr := uintptr(unsafe.Pointer(&region[0]))
	windows.VirtualUnlock(addr, uintptr(len(region)))
	if err := windows.VirtualFree(addr, 0, windows.MEM_RELEASE); err != nil {
		return fmt.Errorf("secretmem: VirtualFree: %w", err)
	}
	return nil
}

// Harden does nothing on Windows: a service process's memory is closed to
// non-administrators already, and Windows has no core-dump switch per
// process.
func Harden() error { return nil }
