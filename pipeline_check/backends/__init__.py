"""What pipeline-check knows of each system it talks to: the protocols (probe, injector, sampler, contract
reader, cleanup, load), the capability registry, and one package per system. Nothing outside a backend
package branches on a stage or source type."""
