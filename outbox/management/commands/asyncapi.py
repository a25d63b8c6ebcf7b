"""Write the event catalogue, an AsyncAPI 3.0 document generated from the registry."""

import json

from django.core.management.base import BaseCommand

from outbox.asyncapi import asyncapi_document


class Command(BaseCommand):
    help = "Print (or write to --output) the AsyncAPI 3.0 document of every event type."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="a file to write instead of standard output")

    def handle(self, *args, output=None, **options):
        text = json.dumps(asyncapi_document(), indent=2) + "\n"
        if output:
            with open(output, "w", encoding="utf-8") as file:
                file.write(text)
            self.stderr.write(f"wrote {output}")
        else:
            self.stdout.write(text, ending="")
