from is_telemetry.cli import main

main()
