package main

func runP2P(quick bool) {}
