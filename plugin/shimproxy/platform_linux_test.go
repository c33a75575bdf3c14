package shimproxy

import (
	"testing"
)

func testPlatform(*testing.T) platform { return linuxPlatform{} }

// On Linux the agent attaches after the inner create, by the init's pid:
// a claim it refuses takes the created container back.
const preparesBeforeCreate = false
