// Package nri is Lockbox's NRI plugin, for containers created through CRI
// (Kubernetes, crictl), which the runc wrapper may never see.
//
//   - CreateContainer: the agent names the claim's targets (or refuses the
//     claim, failing the create), and each target gets a read-only bind of
//     the agent's empty mountpoint file, so that the runtime makes the
//     mountpoints before the root may turn read-only; nothing else of the
//     container (a service-account token, the image's files) is covered.
//   - StartContainer (after runc create, before the process runs): the agent
//     attaches the secrets by the container's pid; an error fails the start.
//   - StopContainer / RemoveContainer: the agent wipes them.
//   - Synchronize (on connect): rebuilds the set of claiming containers,
//     wipes what stopped containers still hold, and evicts the running
//     claiming containers the agent holds nothing for (sync.go).
//
// A container claims a service with the container or pod annotation
// lockbox.service (NRI shows CRI annotations as they were given).
//
// Fail closed: a claiming container the plugin sees but the agent cannot
// serve (no grant, agent down) fails its start with an error naming the
// service. One it never sees (plugin not connected) is refused by NRI's
// default validator when its pod carries RequiredPluginsAnnotation naming
// the plugin (PodAnnotations builds a claiming pod's annotations); the
// validator's global required_plugins would refuse every other pod of the
// node as well, and is not what Lockbox advises. One created while the
// plugin was connected but started while it was away runs without its
// secrets until the plugin reconnects: Synchronize then kills it.
//
// The plugin runs inside "lockbox agent --nri" (New with the agent's own
// request handler) or standalone against the agent socket (cmd/lockbox-nri).
// It translates NRI events into agent calls, and stops a container that
// runs without its claim (NRI v0.12 cannot carry a plugin's eviction): it
// never touches mounts or secret bytes itself.
package nri
