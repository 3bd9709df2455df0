"""Real clusters on one machine, for the tests, the benchmarks that need several hosts, and trying the system by
hand (``phasegan-hpc testbed up|down``):

    slurm.py   a real Slurm (munged, slurmctld, slurmd from Debian): one node on this machine, or one per host
               of the namespace cluster
    netns.py   a two-host cluster: network + UTS namespaces node1 and node2 on a veth pair, with Slurm and Ray
               on them; a lost node is ``kill -9`` of every process in its namespace

Nothing here is imported by the rest of the package, and importing it starts nothing.
"""
