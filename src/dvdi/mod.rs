//! Mesos: the argv model of the `dvdcli` binary and the Docker plugin
//! client used for drivers other than rexray.
