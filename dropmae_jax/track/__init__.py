"""Single-object tracking: benchmark readers, result files, metrics and the DropTrack tracker."""
